/** Stable error codes: tests check `code`, messages may change. */
export type KernscopeCode =
  | 'ERR_KERNSCOPE_BPF'
  | 'ERR_KERNSCOPE_CONFIG'
  | 'ERR_KERNSCOPE_USAGE'
  | 'ERR_KERNSCOPE_PRIVILEGE'
  | 'ERR_KERNSCOPE_KERNEL'
  | 'ERR_KERNSCOPE_LISTEN';

export class KernscopeError extends Error {
  constructor(
    readonly code: KernscopeCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KernscopeError';
  }
}

/** An exception thrown by the native addon: libbpf's errno and log ride along. */
export interface BpfError extends Error {
  code: 'ERR_KERNSCOPE_BPF';
  errno: number;
  log: string;
}

export function isBpfError(e: unknown): e is BpfError {
  return e instanceof Error && (e as { code?: unknown }).code === 'ERR_KERNSCOPE_BPF';
}
