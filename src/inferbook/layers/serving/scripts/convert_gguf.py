"""Turn a GGUF checkpoint into a Hugging Face safetensors folder vLLM can load.

Runs inside the vLLM component environment (it needs torch, transformers, gguf
and accelerate), as a standalone script: ``python convert_gguf.py GGUF OUT``.
vLLM cannot load this GGUF itself, and transformers marks GGUF-loaded models as
not serialisable, so the dequantised weights are copied into a fresh model of
the same configuration before saving.
"""

import sys
from pathlib import Path


def main(gguf: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: convert_gguf.py GGUF_FILE OUT_DIR")
    main(sys.argv[1], sys.argv[2])
