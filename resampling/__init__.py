"""The resampling engine: exact token prefixes, backends (hf, vllm, openai), a resumable Parquet cache."""
