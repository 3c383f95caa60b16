"""The Kafka stages over the pipeline: the consumer loop, summarize, merge, the label join and label windows."""
