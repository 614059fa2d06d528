"""Turns the AsyncAPI document's schemas into one JSON Schema for the generator: its root is any event
(one of the event types, told apart by `type`), each type's `data` titled `<Type>Data` so its class is
named after it. Usage: asyncapi_schema.py ASYNCAPI_JSON > SCHEMA_JSON"""

import json
import sys

NOT_EVENTS = {"Envelope", "Headers"}


def main(path: str) -> None:
    with open(path) as f:
        schemas = json.load(f)["components"]["schemas"]
    types = sorted(name for name in schemas if name not in NOT_EVENTS)
    for name in types:
        data = schemas[name]["properties"]["data"]
        if "properties" in data:
            data["title"] = f"{name}Data"
    root = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Event",
        "description": "Any event of the log, told apart by its `type`.",
        "oneOf": [{"$ref": f"#/definitions/{name}"} for name in types],
        "discriminator": {"propertyName": "type"},
        "definitions": schemas,
    }
    json.dump(root, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
