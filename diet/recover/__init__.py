"""Recovery fine-tuning after pruning (`recover=lora`): options and their identity (`options`), the training and
validation windows (`data`), the LoRA training loop with resumable checkpoints (`lora`, `state`)."""
