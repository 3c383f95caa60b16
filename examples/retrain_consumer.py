import json
import sys

from confluent_kafka import Consumer

bootstrap, topics = sys.argv[1], sys.argv[2:]  # e.g. 127.0.0.1:9092 driftline.retrain driftline.rollback
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "retrainer", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
consumer.subscribe(topics)
done = set()  # a request re-sent after a crash has the same id: act once
while (msg := consumer.poll(15)) is not None:  # a real service loops forever; this one stops when idle
    if msg.error():
        continue
    event = json.loads(msg.value())
    if event["id"] not in done:
        done.add(event["id"])  # here: start the job (event["data"]["traffic"] = the window to retrain on)
        print(json.dumps(event), flush=True)
    consumer.commit(msg)
