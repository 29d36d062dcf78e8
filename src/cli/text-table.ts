// Plain-text tables for the command line: columns padded to their widest cell, and the cells
// they are made of (a time to the second, a text cut to one line).

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

/** A time as a table cell: UTC, to the second (`2026-11-30 15:04:05`). */
export function timeCell(at: Date): string {
  return at.toISOString().replace("T", " ").slice(0, 19);
}

/** `text` on one line (runs of white space folded), cut to `width` characters with an ellipsis. */
export function oneLine(text: string | null, width: number): string {
  const line = (text ?? "").replace(/\s+/g, " ").trim();
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}
