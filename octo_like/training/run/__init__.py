"""One training run, start to end: the entry points' shared command line, the run's data and
model at start-up, the compiled train and eval steps, the loop shared by pretraining and
fine-tuning, evaluation while training, metrics, progress, profiling and preemption."""
