"""A run's checkpoints and its workdir: saving and resuming the train state, trusting only
verified steps, staging on filesystems orbax cannot write, the workdir as the run's identity and
its one-writer lock. (The format a saved model is read in, with its checksums, is the model's:
octo_like/model/checkpoint_layout.py, checkpoint_integrity.py, model_checkpoint.py.)"""
