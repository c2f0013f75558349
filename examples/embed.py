"""Embed jobmonitor in an asyncio program: serve a job, submit it, read its stream.

    python examples/embed.py
"""
import asyncio

from jobmonitor import Job, JobMonitor

app = JobMonitor()


@app.job("hello")
async def hello(job: Job) -> None:
    job.info(f"Hello, {job.params.get('Name', 'world')}!")


async def main() -> None:
    async with app.serve(host="127.0.0.1", port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b'<job_command name="SubmitJob"><job_variables>'
                     b'<var name="ProjectName">hello</var><var name="Name">jobmonitor</var>'
                     b'<var name="_sys_ClientJobMonitor">true</var>'
                     b"</job_variables></job_command>")
        while line := await reader.readline():
            print(line.decode().rstrip())
        writer.close()
        await writer.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
