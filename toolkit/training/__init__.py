"""Training one allocation: settings, model loading, the engine, checkpoints, distributed launch, the demo model.

    engine.py       `train(settings)`: the plain PyTorch + PEFT loop behind `python -m toolkit train`
    checkpoint.py   atomic safetensors checkpoints with optimizer and RNG state
    distributed.py  the torchrun launcher (`python -m toolkit.training.distributed`) and the rank context
    demo.py         the offline demo VLM (preset `demo`): tokenizer, processor, shipped weights (demo_model/)
"""
