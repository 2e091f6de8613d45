"""Publishing to the Hugging Face Hub: `publish.py` pushes an adapter folder, `modelcard.py` writes its card."""
