"""Training one allocation: settings, model loading, the engine, checkpoints, distributed launch, the demo model.

    settings.py     the settings tree of a run (`TrainSettings`) and an evaluation (`EvalSettings`); model defaults
    engine.py       `train(settings)` behind `python -m toolkit train`: plan, setup, resume, fit, finalize
    modeling.py     loading the base model (precision, 4-bit) and applying the calculator's LoraConfig
    processors.py   loading the processor with or without torchvision; one-line load errors
    loop.py         `fit`: the plain PyTorch + PEFT training loop (schedule, data order, signals, checkpoints)
    compute.py      only the compute the study needs: logits on answer positions, no backward through frozen parts
    order.py        the data order of a run: sample k as a pure function of (seed, k), optionally grouped by length
    pack.py         packed training: a study's arms that share a base model trained in one process (#28)
    fused_lora.py   the packed forward: several arms' LoRA adapters on one frozen base, batches stacked
    checkpoint.py   atomic safetensors checkpoints with optimizer and RNG state
    distributed.py  the torchrun launcher (`python -m toolkit.training.distributed`) and the rank context
    demo.py         the offline demo VLM (preset `demo`): tokenizer, processor, shipped weights (demo_model/)
"""
