"""Outputs a person looks at: image grids, reconstructions, training curves, t-SNE maps, and a judge
of whether generated digits look like digits. Each function takes tensors or arrays (never models),
writes one PNG and returns its path.

    from dgen.eval.images import save_grid
    save_grid(samples, "runs/vae/images/samples.png")     # samples: [N, C, H, W] in [-1, 1]
"""
