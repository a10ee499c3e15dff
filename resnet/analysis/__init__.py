"""Analysis: the layer table (``summary``), feature maps and Grad-CAM (``features``), the labs'
experiments (``labs``)."""
