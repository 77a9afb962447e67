"""What --engine takes, without loading any engine (every command's parser has it)."""

from __future__ import annotations

CHOICES = ("docker", "buildah", "podman")  # docker: buildx where it is installed, else the classic builder
