"""Models: the ImageNet ResNet family (``resnet``) and the transfer-learning strategies on top of it (``transfer``)."""
