"""Pure pipeline logic: decode, window, summarise, merge, join labels, make rows. No Kafka, no ClickHouse."""
