"""Greedy generation with DFloat11's own DFloat11Model (a directory whose
config.json has `dfloat11_config`) or, for the same-framework baseline, the
bf16 model in transformers, for the side-by-side run of
scripts/gpu-run-model.sh: prints one JSON object (tokens, tokens/s of the
decode phase, time to first token, torch's peak allocation).

usage: dfloat11_run.py MODEL_DIR PROMPT_IDS NEW_TOKENS
"""
import os
import json
import sys
import time

import torch


def load(path):
    with open(os.path.join(path, "config.json")) as f:
        if "dfloat11_config" in json.load(f):
            from dfloat11 import DFloat11Model

            return DFloat11Model.from_pretrained(path, device="cuda")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16).to("cuda").eval()


def main():
    path, prompt, new = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], max(int(sys.argv[3]), 1)
    model = load(path)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ids = torch.tensor([prompt], device="cuda")
    tokens, past = [], None
    with torch.no_grad():
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        for step in range(new):
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            tokens.append(int(nxt))
            if step == 0:
                torch.cuda.synchronize()
                first = time.perf_counter()
            if step + 1 == new:
                break
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        torch.cuda.synchronize()
        end = time.perf_counter()
    decode_steps = max(new - 1, 1)
    print(json.dumps({
        "tokens": tokens,
        "ttft_s": first - start,
        "tokens_per_s": decode_steps / (end - first),
        "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
    }))


if __name__ == "__main__":
    main()
