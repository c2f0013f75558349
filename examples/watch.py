"""Submit a job and print its status stream (standard library only).

    python examples/watch.py [HOST] [PORT] [PROJECT]
"""
import socket
import sys
from xml.sax.saxutils import escape

args = sys.argv[1:] + [None] * 3
host, port, project = args[0] or "127.0.0.1", int(args[1] or 7400), args[2] or "count"
packet = f"""<job_command name="SubmitJob"><job_variables>
<var name="ProjectName">{escape(project)}</var>
<var name="_sys_ClientJobMonitor">true</var>
</job_variables></job_command>"""
with socket.create_connection((host, port)) as sock:
    sock.sendall(packet.encode())
    for line in sock.makefile("r", encoding="utf-8", newline="\r\n"):
        print(line.rstrip("\r\n"))
