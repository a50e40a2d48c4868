"""Random weights for the real FID Inception-V3, shared by the FID tests (synthrel's network and torch-fidelity's)."""

import torch


def random_inception_weights(path, seed=0):
    """The real FID Inception-V3 architecture with random weights that keep activations alive (He-normal convs,
    random BatchNorm statistics), written as a plain state dict like torch-fidelity's weights file."""
    from synthrel.analysis.inception import FIDInceptionV3

    torch.manual_seed(seed)
    model = FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    torch.save(model.state_dict(), path)
    return path
