/**
 * The machine a report was measured on: CPU model, core count and the instruction sets that decide which
 * kernels oneDNN, ONNX Runtime and PyTorch pick (AVX2 vs AVX-512, VNNI for int8). Every report states it, so a
 * number is never compared across machines by accident.
 */
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';

/** The ISA flags reported, present or not (names as in /proc/cpuinfo and lscpu). */
export const ISA_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'] as const;

export interface Machine {
  cpuModel: string;
  nproc: number;
  ramGiB: number;
  /** The flags of ISA_FLAGS this CPU has. */
  isa: string[];
}

export function machine(): Machine {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = new Set(/flags\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.split(' ') ?? []);
  return {
    cpuModel: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? '?',
    nproc: cpus().length,
    ramGiB: totalmem() / 2 ** 30,
    isa: ISA_FLAGS.filter((f) => flags.has(f)),
  };
}

/** One markdown line: model, cores, RAM, which ISA flags are there and which are not, the load average. */
export function machineLine(m: Machine = machine()): string {
  const absent = ISA_FLAGS.filter((f) => !m.isa.includes(f));
  return `${m.cpuModel}, nproc ${m.nproc}, ${m.ramGiB.toFixed(1)} GiB RAM; ISA: ${m.isa.join(' ') || 'none of the listed'}` +
    `${absent.length ? ` (no ${absent.join(', no ')})` : ''}; 1-min load average ${loadavg()[0]!.toFixed(2)}`;
}

/** Whether other work loaded the cores (a 1-min load average above 3/4 of the core count): a report says so. */
export function sharedMachine(load: number = loadavg()[0]!): boolean {
  return load > 0.75 * cpus().length;
}
