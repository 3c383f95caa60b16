"""What each model version is compared with: the book in memory, the topic, files, automatic references."""
