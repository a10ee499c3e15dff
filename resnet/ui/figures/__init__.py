"""The figures (matplotlib): block diagrams, feature maps and Grad-CAM, the labs' plots, training curves; every
visible string from ``resnet.i18n``."""
