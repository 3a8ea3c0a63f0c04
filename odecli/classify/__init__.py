"""`odecli classify`: ODE-Net against ResNet on handwritten digits (sklearn digits, MNIST)."""
