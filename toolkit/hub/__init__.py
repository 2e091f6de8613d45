"""Publishing to the Hugging Face Hub.

    publish.py    `python -m toolkit push`: validate an adapter folder and push it (create_repo + one commit)
    modelcard.py  the adapter's model card (huggingface_hub ModelCard): allocation table, setup, how to load
    studycard.py  the card's "Study" section: the budget-matched study the adapter came from
"""
