"""The shared engine every path uses: errors, checks, atomic outputs, work folders, the saliency mask,
masked training, checkpoints and pipeline export."""
