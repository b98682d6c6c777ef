export function WorkbenchPage({
  deadLetterId,
}: {
  deadLetterId: string | undefined;
  actor: string;
}) {
  return (
    <section>
      <h1>Mapping workbench</h1>
      <p>{deadLetterId ? `Input: dead letter ${deadLetterId}` : 'Pick a dead letter to start.'}</p>
    </section>
  );
}
