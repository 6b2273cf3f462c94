"""nn.Modules only: encoders, decoders, generators, critics, classifiers. No losses, no training code."""
