"""Working with the evaluation harnesses researchers already use (issue #25).

    python -m toolkit export --adapter adapters/<name> --merged exports/<name>     # toolkit/interop/export.py
    python -m toolkit import-eval --adapter adapters/<name> samples_vqav2_val.jsonl  # toolkit/interop/lmms_eval.py

`export` merges an adapter into its base (PEFT's `merge_and_unload`) and writes a plain transformers folder that
lmms-eval's and VLMEvalKit's model wrappers load from one path; `import-eval` brings lmms-eval's per-sample
outputs back as an ordinary evaluation of the adapter, so `compare` applies its seed-aware statistics to them.
"""
