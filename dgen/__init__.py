"""dgen: small generative and domain-adaptation models, from one CPU to Slurm clusters."""

__version__ = "0.1.0"
