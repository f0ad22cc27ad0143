"""An internal service written in Python, calling Portcullis as any non-Node
service would: no generated code, only Debian's python3-grpcio,
python3-protobuf and python3-jwt (with python3-cryptography for ES256).

It proves itself with a client assertion it signs (RFC 7523) and keeps the
service token it gets. Then it reads commands from stdin, one a line, and
answers each with one JSON object on stdout:

  verify <user token>              checks the token against the JWKS
  introspect <user token>          asks IntrospectToken
  watch <user token>               polls IntrospectToken until the token is not active
  exchange <user token> <audience> asks ExchangeToken for a token bound to <audience>

Tokens come on stdin rather than argv, where every local user could read them.
Run it with Debian's /usr/bin/python3: a pyenv or virtualenv python3 does not see Debian's packages.
"""

import argparse
import base64
import hashlib
import json
import sys
import time
import urllib.request
import uuid

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

TOKEN_SERVICE = "/portcullis.v1.TokenService/"
# Portcullis's own issuer and audience, the defaults of JWT_ISSUER and JWT_AUDIENCE.
PORTCULLIS = "portcullis"
WATCH_BUDGET_SECONDS = 1.0
WATCH_INTERVAL_SECONDS = 0.05


class Messages:
    """Message classes built at run time from the FileDescriptorSet `buf build` writes."""

    def __init__(self, descriptor_set_path):
        files = descriptor_pb2.FileDescriptorSet()
        with open(descriptor_set_path, "rb") as f:
            files.ParseFromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        # buf writes every file after the files it imports.
        for file in files.file:
            self.pool.Add(file)

    def __getitem__(self, full_name):
        descriptor = self.pool.FindMessageTypeByName(full_name)
        # GetMessageClass arrived in protobuf 4.22; Debian 12 ships 4.21, which has only the factory.
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(self.pool).GetPrototype(descriptor)


class TokenService:
    """The three TokenService calls, over a plain channel."""

    def __init__(self, target, messages):
        self.channel = grpc.insecure_channel(target)
        self.messages = messages

    def call(self, method, request_fields, bearer=None):
        request_class = self.messages[f"portcullis.v1.{method}Request"]
        response_class = self.messages[f"portcullis.v1.{method}Response"]
        stub = self.channel.unary_unary(
            TOKEN_SERVICE + method,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        metadata = [("authorization", f"Bearer {bearer}")] if bearer else None
        return stub(request_class(**request_fields), metadata=metadata, timeout=10)

    def error_reason(self, error):
        """The google.rpc.ErrorInfo reason in a failed call's status details, if any."""
        details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
        if not details:
            return None
        status = self.messages["google.rpc.Status"].FromString(details)
        error_info = self.messages["google.rpc.ErrorInfo"]
        for detail in status.details:
            if detail.type_url.endswith("/google.rpc.ErrorInfo"):
                return error_info.FromString(detail.value).reason
        return None


def ec_thumbprint(public_key):
    """The RFC 7638 thumbprint of a P-256 public key: the kid Portcullis knows it by."""
    numbers = public_key.public_numbers()
    coordinate = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": coordinate(numbers.x), "y": coordinate(numbers.y)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def client_assertion(client_id, private_key, audience):
    """A one-use JWT proving we hold the private key: iss and sub are us, and it lives a minute."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": ec_thumbprint(private_key.public_key())})


def verify_with_jwks(jwks_url, token):
    """Verifies a user token with the key its kid names, by the algorithm the JWKS gives that key."""
    with urllib.request.urlopen(jwks_url, timeout=10) as response:
        keys = json.load(response)["keys"]
    kid = jwt.get_unverified_header(token).get("kid")
    jwk = next((key for key in keys if key["kid"] == kid), None)
    if jwk is None:
        return {"verified": False, "error": "unknown kid"}
    try:
        claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience=PORTCULLIS, issuer=PORTCULLIS)
    except jwt.InvalidTokenError as error:
        return {"verified": False, "error": type(error).__name__}
    return {"verified": True, "alg": jwk["alg"], "sub": claims["sub"], "aud": claims["aud"]}


class Service:
    def __init__(self, args):
        self.tokens = TokenService(args.target, Messages(args.descriptors))
        self.jwks_url = args.jwks_url
        with open(args.private_key, "rb") as f:
            private_key = serialization.load_pem_private_key(f.read(), password=None)
        issued = self.tokens.call(
            "IssueServiceToken",
            {
                "client_id": args.client_id,
                "client_assertion": client_assertion(args.client_id, private_key, args.assertion_audience),
                "audience": PORTCULLIS,
            },
        )
        self.service_token = issued.access_token
        # Our own token came straight from Portcullis over the channel: its claims are only reported.
        claims = jwt.decode(issued.access_token, options={"verify_signature": False})
        emit({"step": "issue", "token_type": issued.token_type, "expires_in": issued.expires_in, "claims": claims})

    def verify(self, user_token):
        return {"step": "verify", **verify_with_jwks(self.jwks_url, user_token)}

    def introspect(self, user_token):
        answer = self.tokens.call("IntrospectToken", {"token": user_token}, bearer=self.service_token)
        return {"step": "introspect", "active": answer.active, "sub": answer.sub, "sid": answer.sid, "aud": answer.aud}

    def watch(self, user_token):
        started = time.monotonic()
        polls = 0
        while True:
            polls += 1
            active = self.tokens.call("IntrospectToken", {"token": user_token}, bearer=self.service_token).active
            elapsed = time.monotonic() - started
            if not active or elapsed >= WATCH_BUDGET_SECONDS:
                return {"step": "watch", "active": active, "seconds": round(elapsed, 3), "polls": polls}
            time.sleep(WATCH_INTERVAL_SECONDS)

    def exchange(self, user_token, audience):
        try:
            exchanged = self.tokens.call("ExchangeToken", {"subject_token": user_token, "audience": audience}, bearer=self.service_token)
        except grpc.RpcError as error:
            return {"step": "exchange", "code": error.code().name, "reason": self.tokens.error_reason(error)}
        claims = jwt.decode(exchanged.access_token, options={"verify_signature": False})
        return {"step": "exchange", "code": "OK", "claims": claims}


def emit(answer):
    print(json.dumps(answer), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="Portcullis's gRPC address, host:port")
    parser.add_argument("--descriptors", required=True, help="the FileDescriptorSet of Portcullis's contract")
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--client-id", required=True, help="our service account's name")
    parser.add_argument("--private-key", required=True, help="PEM file of the key registered with `service key`")
    parser.add_argument("--assertion-audience", required=True, help="Portcullis's token endpoint or issuer")
    service = Service(parser.parse_args())

    commands = {"verify": service.verify, "introspect": service.introspect, "watch": service.watch, "exchange": service.exchange}
    for line in sys.stdin:
        command, *arguments = line.split()
        emit(commands[command](*arguments))


if __name__ == "__main__":
    main()
