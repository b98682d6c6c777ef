/**
 * The form fields every page uses: a labelled text input and a labelled
 * checkbox, each wrapping its input in its label (so the label names it for
 * assistive technology without ids).
 */
import type { ComponentChildren } from 'preact';

export function TextField(props: {
  readonly label: ComponentChildren;
  readonly name: string;
  readonly value: string;
  readonly onValue: (value: string) => void;
  readonly required?: boolean;
  /** A secret: the browser masks it. */
  readonly type?: 'password';
  readonly autocomplete?: string;
}) {
  const input = {
    name: props.name,
    value: props.value,
    onInput: (e: { currentTarget: HTMLInputElement }) => props.onValue(e.currentTarget.value),
    required: props.required ?? false,
    ...(props.autocomplete ? { autocomplete: props.autocomplete } : {}),
  };
  return (
    <label>
      {props.label}
      {props.type === 'password' ? <input type="password" {...input} /> : <input {...input} />}
    </label>
  );
}

export function Checkbox(props: {
  readonly label: ComponentChildren;
  readonly name: string;
  readonly checked: boolean;
  readonly onChecked: (checked: boolean) => void;
}) {
  return (
    <label class="inline">
      <input
        type="checkbox"
        name={props.name}
        checked={props.checked}
        onChange={(e) => props.onChecked(e.currentTarget.checked)}
      />{' '}
      {props.label}
    </label>
  );
}
