"""A moto S3 server as the SOT's object store, for the tests: buckets,
objects, an IAM user whose keys read them, and the requests it received."""
import json
import os
import urllib.request

import boto3
from pyarrow import fs

from devkit.local_servers import s3_server
from workflows.meta import META_FILENAME

from common import DATE, WINDOW

BUCKET, PREFIX = "risk-scoring", "snapshots"


class S3Store:
    """A moto S3 server, and what the SOT does to it: buckets, objects,
    and an IAM user whose keys read them once authentication is on."""

    def __init__(self, root, port):
        self.root, self.endpoint = root, f"http://127.0.0.1:{port}"
        self.server = s3_server(root, port, recording=os.path.join(root, "requests.jsonl"))
        self.setup_keys = dict(endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id="setup", aws_secret_access_key="setup")

    @property
    def filesystem(self):
        return fs.S3FileSystem(access_key="setup", secret_key="setup", endpoint_override=self.endpoint,
                               region="us-east-1", allow_bucket_creation=True)

    def api(self, path, body=b""):
        request = urllib.request.Request(f"{self.endpoint}/moto-api/{path}", data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request) as response:
            return response.read()

    def reset(self):
        self.api("reset-auth", b"inf")  # every request allowed, as before any test
        self.api("reset")
        self.filesystem.create_dir(BUCKET)

    def put(self, key, data):
        with self.filesystem.open_output_stream(f"{BUCKET}/{key}") as out:
            out.write(data)

    def mirror(self, folder, network="ethereum", date=DATE, skip=()):
        """Uploads a published snapshot folder under the store's prefix, META.json last."""
        names = sorted(os.listdir(folder), key=lambda name: name == META_FILENAME)
        for name in names:
            if name not in skip:
                with open(os.path.join(folder, name), "rb") as stream:
                    self.put(self.key(name, network, date), stream.read())

    @staticmethod
    def key(filename, network="ethereum", date=DATE):
        return f"{PREFIX}/{network}/{date.isoformat()}/{WINDOW}/{filename}"

    def reader_keys(self):
        """Keys of a user allowed to read the bucket; from now on every request must be signed by one."""
        iam = boto3.client("iam", **self.setup_keys)
        iam.create_user(UserName="pipeline")
        iam.put_user_policy(UserName="pipeline", PolicyName="read-snapshots", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        self.api("reset-auth", b"0")
        return key["AccessKeyId"], key["SecretAccessKey"]

    def recorded(self):
        """Every request since recording started: method, path and headers."""
        self.api("recorder/stop-recording")
        with open(self.server_recording) as stream:
            return [json.loads(line) for line in stream]

    def record(self):
        if os.path.exists(self.server_recording):
            os.remove(self.server_recording)
        self.api("recorder/start-recording")

    @property
    def server_recording(self):
        return os.path.join(self.root, "requests.jsonl")
