/** Socket addresses as the kernel keeps them, for labels and records. */

/** An address of `family` (AF_INET 2, AF_INET6 10) in network order; an IPv4-mapped IPv6 address is shown as IPv4, as clients wrote it. */
export function addr(b: Buffer, family: number): string {
  if (family === 2) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (family !== 10) return '';
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return parts.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
}
