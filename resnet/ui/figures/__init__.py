"""The figures (matplotlib): block diagrams, feature maps and Grad-CAM, the labs' plots, training curves; every
visible string from ``resnet.i18n``."""


def human(n: float) -> str:
    """A count for a bar's label: 1.18 M, 3.7 G, 640."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"
