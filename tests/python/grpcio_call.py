"""Makes one unary call with grpcio's default channel options and prints how it ended.

Usage: grpcio_call.py TARGET METHOD REQUEST_FILE [TOKEN]

The request is sent as the bytes of REQUEST_FILE (an encoded protobuf message), so no
generated code is needed. Prints one JSON object: the status code's name and the
status message's length in bytes.
"""

import json
import sys

import grpc


def main() -> None:
    target, method, request_file = sys.argv[1:4]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    with open(request_file, "rb") as request:
        payload = request.read()
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        try:
            call(payload, metadata=metadata, timeout=30)
            result = {"code": "OK", "message_bytes": 0}
        except grpc.RpcError as error:
            message = error.details() or ""
            result = {
                "code": error.code().name,
                "message_bytes": len(message.encode()),
                "message_start": message[:300],
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
