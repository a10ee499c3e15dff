"""ResNet Lab: `python app.py` serves the app (port from GRADIO_SERVER_PORT, host from GRADIO_SERVER_NAME)."""
from resnet.ui import main

if __name__ == "__main__":
    main()
