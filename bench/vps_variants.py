#!/usr/bin/env python3
"""Writes the VPS load case in its other forms, beside DIR/vps.{http,rpc,grpc}:

- vps_connect_json: Connect, JSON codec, to the method's own path;
- vps_connect_proto: Connect, binary codec (the message's wire bytes);
- vps_protobuf: the REST route with an application/x-protobuf body;
- vps_multipart: the REST route as multipart/form-data: the message without its image as the
  `*` JSON part, and the image as a raw file part `stVPBody.stCamera.imgData`.

Usage: vps_variants.py DIR METHOD TARGET BODY_FILE
"""
import base64
import json
import shutil
import sys


def write_case(out, name, method, target, body, headers):
    body_file = f"{out}/{name}.body"
    with open(body_file, "wb") as f:
        f.write(body)
    with open(f"{out}/{name}.http", "w") as f:
        f.write(f"{method} {target} {body_file}\n")
    with open(f"{out}/{name}.headers", "w") as f:
        f.write("".join(f"{h}\n" for h in headers))
    for ext in ("rpc", "grpc"):
        shutil.copy(f"{out}/vps.{ext}", f"{out}/{name}.{ext}")


def multipart(message):
    camera = message["stVPBody"]["stCamera"]
    image = base64.b64decode(camera.pop("imgData"))
    boundary = "protogate-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="*"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
        + json.dumps(message).encode()
        + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="stVPBody.stCamera.imgData"; '
        'filename="frame.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + image
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def main():
    out, method, target, body_file = sys.argv[1:5]
    with open(body_file, "rb") as f:
        body = f.read()
    with open(f"{out}/vps.rpc") as f:
        grpc_path = f.read().strip()
    with open(f"{out}/vps.grpc", "rb") as f:
        wire = f.read()[5:]
    connect = ["connect-protocol-version: 1"]
    write_case(out, "vps_connect_json", "POST", grpc_path, body,
               ["content-type: application/json"] + connect)
    write_case(out, "vps_connect_proto", "POST", grpc_path, wire,
               ["content-type: application/proto"] + connect)
    write_case(out, "vps_protobuf", method, target, wire,
               ["content-type: application/x-protobuf"])
    form, form_type = multipart(json.loads(body))
    write_case(out, "vps_multipart", method, target, form, [f"content-type: {form_type}"])


if __name__ == "__main__":
    main()
