"""Community environments (optional extras) as registry tasks with multimodal scripted experts."""
