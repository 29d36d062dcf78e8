// Plain-text tables for the command line: columns padded to their widest cell.

/**
 * Lines of `rows` (the first is the header) with columns two spaces apart. Columns listed in
 * `numeric` are right-aligned; `indent` goes before each line.
 */
export function textTable(rows: string[][], options: { numeric?: number[]; indent?: string } = {}): string[] {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const numeric = new Set(options.numeric ?? []);
  return rows.map(
    (row) =>
      (options.indent ?? "") +
      row
        .map((cell, column) => (numeric.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
        .join("  ")
        .trimEnd(),
  );
}
