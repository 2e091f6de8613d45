"""Training one allocation: settings, model loading, the engine, checkpoints, distributed launch, the demo model.

    engine.py       `train(settings)` behind `python -m toolkit train`: setup, resume, fit, finalize
    modeling.py     loading the base model (precision, 4-bit) and applying the calculator's LoraConfig
    processors.py   loading the processor with or without torchvision; one-line load errors
    loop.py         `fit`: the plain PyTorch + PEFT training loop (schedule, data order, signals, checkpoints)
    checkpoint.py   atomic safetensors checkpoints with optimizer and RNG state
    distributed.py  the torchrun launcher (`python -m toolkit.training.distributed`) and the rank context
    demo.py         the offline demo VLM (preset `demo`): tokenizer, processor, shipped weights (demo_model/)
"""
