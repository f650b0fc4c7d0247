"""`/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions`: sharing a
fine-tuned model with other projects."""
