"""The default 3D morphable model, ICT-FaceKit light (MIT), shipped with facegeo (see README.md)."""
