import { SpanKind } from "@opentelemetry/api";
import { messageDeliveries } from "../platform/metrics.js";
import { inChildSpan, tracingOn } from "../platform/tracing.js";

/** A provider that takes messages of one kind: an SMS provider or a mailer. */
export interface MessageProvider<Name extends string, Message> {
  readonly name: Name;
  send(message: Message): Promise<void>;
}

/**
 * Times each hand-over to the provider, whether it takes the message or not,
 * and with tracing on gives it a span `${span}.send` that names the provider
 * only, never the recipient or the content.
 */
export function instrumented<Name extends string, Message>(
  provider: MessageProvider<Name, Message>,
  channel: "sms" | "email",
  span: "sms" | "mail",
): MessageProvider<Name, Message> {
  const delivered = messageDeliveries.labels(channel, provider.name, "ok");
  const undelivered = messageDeliveries.labels(channel, provider.name, "failed");
  const attributes = { [`portcullis.${span}.provider`]: provider.name };
  const timed = async (message: Message) => {
    const startedAt = performance.now();
    try {
      await provider.send(message);
      delivered.observe((performance.now() - startedAt) / 1000);
    } catch (error) {
      undelivered.observe((performance.now() - startedAt) / 1000);
      throw error;
    }
  };
  return {
    name: provider.name,
    send: (message) => (tracingOn ? inChildSpan(`${span}.send`, SpanKind.CLIENT, attributes, () => timed(message)) : timed(message)),
  };
}
