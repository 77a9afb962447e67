"""`dynamo doctor`: can this host run this image? Host facts, judged against the matrix."""
