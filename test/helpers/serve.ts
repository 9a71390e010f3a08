/** `mnv2 serve` as a child process on 127.0.0.1 (port 0), for the serving tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Start `mnv2 serve ARGS` and wait for the address it prints. */
export async function spawnServe(args: string[]): Promise<{ url: string; child: ChildProcess; exited: Promise<[number | null, NodeJS.Signals | null]>; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--threads', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    void exited.then(([code]) => reject(new Error(`mnv2 serve exited with ${code} before listening: ${stderr}`)));
  });
  return { url, child, exited, stderr: () => stderr };
}
