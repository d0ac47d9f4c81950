"""Fine-tuning a pretrained checkpoint: the fine-tuning config resolved against the pretrained
model's, the inputs a new robot adds, and the weights reused, replaced or frozen."""
