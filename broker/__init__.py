"""The MQTT side of glusterctl: the topic contract shared by control service and agents
(`broker.topics`, `broker.messages`) and the embedded amqtt broker (`broker.embedded`).

Importing this package is cheap: amqtt is only imported by `broker.embedded`.
"""

__version__ = "0.1.0"
