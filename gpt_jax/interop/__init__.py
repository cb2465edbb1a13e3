"""Other frameworks' checkpoints and tokenizers <-> gpt_jax (Hugging Face GPT-2: hf_gpt2, hf_files)."""
