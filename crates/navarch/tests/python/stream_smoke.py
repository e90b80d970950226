"""The official Python client's streaming calls against navarch: exec and port-forward."""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

out = stream(v1.connect_get_namespaced_pod_exec, "web", "default",
             command=["sh", "-c", "echo py-exec"], stderr=True, stdin=False,
             stdout=True, tty=False)
assert out.strip() == "py-exec", repr(out)
print("exec ok", repr(out))

resp = stream(v1.connect_get_namespaced_pod_exec, "web", "default",
              command=["sh", "-c", "exit 7"], stderr=True, stdin=False,
              stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=10)
assert resp.returncode == 7, resp.returncode
print("exit code ok")

pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", "default", ports="80")
sock = pf.socket(80)
sock.setblocking(True)
sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
assert b"hello-from-pod" in data, data
print("port-forward ok")
