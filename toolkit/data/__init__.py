"""VQA data: sources (datasets / JSONL / synthetic), the synthetic shapes task, and family-aware prompting.

    sources.py    `load_vqa(...)`: a `datasets` dataset, local JSONL + images, or `synthetic:shapes?...`
    hf_datasets.py one split of a `datasets` dataset (Hub id, its offline cache, a folder): missing splits, scripts
    rows.py       how a source row becomes a record: column names, answers, question/image ids, images
    hygiene.py    image-grouped hold-out, what an adapter trained on, and the evaluation overlap check
    synthetic.py  the deterministic synthetic shapes task (questions, answers, captions)
    families.py   each family's prompt / answer / image-nesting conventions, encoder-decoder detection
    prompting.py  the batch builder: processor-encoded prompt + answer rows, answer-only labels, decoding
"""
