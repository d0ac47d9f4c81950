"""Speed of training, measured: train-step time and model-FLOPs utilization per preset and
fine-tuning mode, and where a step's device time goes in a profiler trace."""
