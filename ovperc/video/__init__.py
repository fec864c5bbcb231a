"""Video: stream frames in, follow every named object with a stable id, write tracks out."""
