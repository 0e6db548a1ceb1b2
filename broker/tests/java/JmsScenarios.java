// JMS scenarios against a broker, with ActiveMQ's own JMS client.
// Usage: java JmsScenarios SCENARIO BROKER_URL
// Prints "ok SCENARIO" when every check holds; exits non-zero otherwise.

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import javax.jms.*;
import org.apache.activemq.ActiveMQConnectionFactory;

public class JmsScenarios {
    static final long WAIT = 10_000;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static Connection connect(String url, String clientId) throws JMSException {
        ActiveMQConnectionFactory factory = new ActiveMQConnectionFactory(url);
        Connection c = factory.createConnection();
        if (clientId != null) {
            c.setClientID(clientId);
        }
        c.start();
        return c;
    }

    static List<String> drain(MessageConsumer consumer, int n) throws JMSException {
        List<String> got = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Message m = consumer.receive(WAIT);
            check(m != null, "message " + i + " of " + n + " did not come");
            got.add(((TextMessage) m).getText());
        }
        return got;
    }

    static void nothingMore(MessageConsumer consumer) throws JMSException {
        Message m = consumer.receive(500);
        check(m == null, "an unexpected message: " + m);
    }

    /** Sends in a transaction are held until commit and dropped at rollback;
     *  a transacted consumer's rollback redelivers. */
    static void transactions(String url) throws Exception {
        Connection c = connect(url, null);
        Session tx = c.createSession(true, Session.SESSION_TRANSACTED);
        Queue q = tx.createQueue("jms.tx");
        MessageProducer p = tx.createProducer(q);
        for (String s : new String[] {"dropped-1", "dropped-2", "dropped-3"}) {
            p.send(tx.createTextMessage(s));
        }
        tx.rollback();
        p.send(tx.createTextMessage("kept-1"));
        p.send(tx.createTextMessage("kept-2"));
        tx.commit();
        Session rx = c.createSession(true, Session.SESSION_TRANSACTED);
        MessageConsumer consumer = rx.createConsumer(rx.createQueue("jms.tx"));
        Message first = consumer.receive(WAIT);
        check(first != null && ((TextMessage) first).getText().equals("kept-1"), "kept-1 first: " + first);
        rx.rollback();
        Message again = consumer.receive(WAIT);
        check(again != null && ((TextMessage) again).getText().equals("kept-1"), "kept-1 again: " + again);
        check(again.getJMSRedelivered(), "redelivered after rollback");
        Message second = consumer.receive(WAIT);
        check(second != null && ((TextMessage) second).getText().equals("kept-2"), "kept-2: " + second);
        rx.commit();
        nothingMore(consumer);
        c.close();
        // Committed consumption stays consumed.
        Connection c2 = connect(url, null);
        Session s2 = c2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        nothingMore(s2.createConsumer(s2.createQueue("jms.tx")));
        c2.close();
    }

    /** CLIENT_ACKNOWLEDGE: acknowledging one acknowledges all before it;
     *  what was not acknowledged goes to the next consumer. */
    static void clientAck(String url) throws Exception {
        Connection c = connect(url, null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(s.createQueue("jms.client"));
        for (int i = 0; i < 5; i++) {
            p.send(s.createTextMessage("m" + i));
        }
        Session ack = c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer consumer = ack.createConsumer(ack.createQueue("jms.client"));
        Message last = null;
        for (int i = 0; i < 3; i++) {
            last = consumer.receive(WAIT);
            check(last != null, "m" + i);
        }
        last.acknowledge();
        consumer.receive(WAIT); // m3, not acknowledged
        c.close();
        Connection c2 = connect(url, null);
        Session s2 = c2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer next = s2.createConsumer(s2.createQueue("jms.client"));
        List<String> rest = drain(next, 2);
        check(rest.equals(Arrays.asList("m3", "m4")), "the unacknowledged come back: " + rest);
        nothingMore(next);
        c2.close();
    }

    /** A selector picks by property. */
    static void selectors(String url) throws Exception {
        Connection c = connect(url, null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue("jms.selectors");
        MessageConsumer red = s.createConsumer(q, "color = 'red' AND size > 2");
        MessageProducer p = s.createProducer(q);
        String[][] sent = {{"red", "3"}, {"blue", "5"}, {"red", "1"}, {"red", "9"}};
        for (String[] m : sent) {
            TextMessage t = s.createTextMessage(m[0] + m[1]);
            t.setStringProperty("color", m[0]);
            t.setIntProperty("size", Integer.parseInt(m[1]));
            p.send(t);
        }
        List<String> got = drain(red, 2);
        check(got.equals(Arrays.asList("red3", "red9")), "selected: " + got);
        nothingMore(red);
        c.close();
    }

    /** A durable subscriber gets what was published while it was away. */
    static void durable(String url) throws Exception {
        Connection c = connect(url, "jms-durable-client");
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic t = s.createTopic("jms.durable");
        s.createDurableSubscriber(t, "sub").close();
        MessageProducer p = s.createProducer(t);
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        for (int i = 0; i < 3; i++) {
            p.send(s.createTextMessage("away" + i));
        }
        c.close();
        Connection back = connect(url, "jms-durable-client");
        Session s2 = back.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TopicSubscriber sub = s2.createDurableSubscriber(s2.createTopic("jms.durable"), "sub");
        List<String> got = drain(sub, 3);
        check(got.equals(Arrays.asList("away0", "away1", "away2")), "kept: " + got);
        sub.close();
        s2.unsubscribe("sub");
        back.close();
    }

    /** Every JMS message type, with headers and typed properties. */
    static void types(String url) throws Exception {
        Connection c = connect(url, null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue("jms.types");
        MessageProducer p = s.createProducer(q);
        TextMessage text = s.createTextMessage("naïve ☕ text");
        text.setJMSCorrelationID("corr-1");
        text.setJMSType("order");
        text.setJMSReplyTo(s.createQueue("jms.replies"));
        text.setIntProperty("count", 7);
        text.setLongProperty("big", 1L << 40);
        text.setBooleanProperty("flag", true);
        text.setDoubleProperty("ratio", 0.5);
        text.setStringProperty("region", "EU");
        text.setShortProperty("small", (short) -3);
        text.setFloatProperty("share", 0.25f);
        text.setByteProperty("tiny", (byte) 9);
        p.send(text);
        BytesMessage bytes = s.createBytesMessage();
        bytes.writeBytes(new byte[] {0, 1, 2, (byte) 0xFF});
        p.send(bytes);
        MapMessage map = s.createMapMessage();
        map.setString("name", "widget");
        map.setInt("qty", 3);
        p.send(map);
        p.send(s.createObjectMessage("a serialized string"));
        StreamMessage stream = s.createStreamMessage();
        stream.writeString("first");
        stream.writeInt(2);
        p.send(stream);
        MessageConsumer consumer = s.createConsumer(q);
        TextMessage t = (TextMessage) consumer.receive(WAIT);
        check(t.getText().equals("naïve ☕ text"), "text: " + t.getText());
        check("corr-1".equals(t.getJMSCorrelationID()), "correlation id");
        check("order".equals(t.getJMSType()), "type");
        check(t.getJMSReplyTo() != null && t.getJMSReplyTo().toString().contains("jms.replies"), "reply to: " + t.getJMSReplyTo());
        check(t.getIntProperty("count") == 7, "int property");
        check(t.getLongProperty("big") == 1L << 40, "long property");
        check(t.getBooleanProperty("flag"), "boolean property");
        check(t.getDoubleProperty("ratio") == 0.5, "double property");
        check("EU".equals(t.getStringProperty("region")), "string property");
        // Each property keeps its type, as sent.
        check(t.getObjectProperty("count") instanceof Integer, "an Integer: " + t.getObjectProperty("count").getClass());
        check(t.getObjectProperty("big") instanceof Long, "a Long");
        check(t.getObjectProperty("flag") instanceof Boolean, "a Boolean");
        check(t.getObjectProperty("ratio") instanceof Double, "a Double");
        check(t.getObjectProperty("region") instanceof String, "a String");
        check(Short.valueOf((short) -3).equals(t.getObjectProperty("small")), "a Short: " + t.getObjectProperty("small"));
        check(Float.valueOf(0.25f).equals(t.getObjectProperty("share")), "a Float: " + t.getObjectProperty("share"));
        check(Byte.valueOf((byte) 9).equals(t.getObjectProperty("tiny")), "a Byte: " + t.getObjectProperty("tiny"));
        BytesMessage b = (BytesMessage) consumer.receive(WAIT);
        byte[] got = new byte[4];
        check(b.readBytes(got) == 4 && Arrays.equals(got, new byte[] {0, 1, 2, (byte) 0xFF}), "bytes");
        MapMessage m = (MapMessage) consumer.receive(WAIT);
        check("widget".equals(m.getString("name")) && m.getInt("qty") == 3, "map");
        ObjectMessage o = (ObjectMessage) consumer.receive(WAIT);
        check(o != null, "object message");
        StreamMessage st = (StreamMessage) consumer.receive(WAIT);
        check("first".equals(st.readString()) && st.readInt() == 2, "stream");
        c.close();
    }

    /** Request and reply over a temporary queue: a responder answers to
     *  JMSReplyTo; once the requester's connection closes, the temporary
     *  queue is gone and sending to it fails. */
    static void requestReply(String url) throws Exception {
        Connection responderConnection = connect(url, null);
        Session rs = responderConnection.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer requests = rs.createConsumer(rs.createQueue("jms.requests"));
        MessageProducer replies = rs.createProducer(null);
        replies.setDeliveryMode(DeliveryMode.PERSISTENT);
        Connection requester = connect(url, null);
        Session qs = requester.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TemporaryQueue replyTo = qs.createTemporaryQueue();
        MessageConsumer answers = qs.createConsumer(replyTo);
        TextMessage request = qs.createTextMessage("what time is it?");
        request.setJMSReplyTo(replyTo);
        request.setJMSCorrelationID("q-1");
        qs.createProducer(qs.createQueue("jms.requests")).send(request);
        Message got = requests.receive(WAIT);
        check(got != null, "the request");
        Destination back = got.getJMSReplyTo();
        check(back instanceof TemporaryQueue, "reply to a temporary queue: " + back);
        TextMessage answer = rs.createTextMessage("noon");
        answer.setJMSCorrelationID(got.getJMSCorrelationID());
        replies.send(back, answer);
        TextMessage reply = (TextMessage) answers.receive(WAIT);
        check(reply != null && reply.getText().equals("noon"), "the reply: " + reply);
        check("q-1".equals(reply.getJMSCorrelationID()), "correlated");
        // Another connection may not consume from it.
        try {
            rs.createConsumer(back);
            check(false, "a consumer on another connection's temporary queue");
        } catch (JMSException expected) {
        }
        requester.close();
        try {
            replies.send(back, rs.createTextMessage("too late"));
            check(false, "a send to a deleted temporary queue");
        } catch (JMSException expected) {
        }
        responderConnection.close();
    }

    /** Consumers with prefetch 0 pull each message: none is held by one
     *  while another asks, and an empty queue answers a timed receive with
     *  nothing once its time is up (and receiveNoWait at once). */
    static void pull(String url) throws Exception {
        Connection c = connect(url + "?jms.prefetchPolicy.all=0", null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue("jms.pull");
        MessageConsumer a = s.createConsumer(q);
        MessageConsumer b = s.createConsumer(q);
        check(a.receiveNoWait() == null, "nothing yet (no wait)");
        long started = System.currentTimeMillis();
        check(a.receive(300) == null, "nothing yet (timed)");
        check(System.currentTimeMillis() - started >= 250, "the timed receive waited");
        MessageProducer p = s.createProducer(q);
        for (int i = 0; i < 4; i++) {
            p.send(s.createTextMessage("p" + i));
        }
        // Each consumer takes what it asks for, in turn, none hoarding.
        List<String> got = new ArrayList<>();
        got.add(((TextMessage) b.receive(WAIT)).getText());
        got.add(((TextMessage) a.receive(WAIT)).getText());
        got.add(((TextMessage) b.receive(WAIT)).getText());
        got.add(((TextMessage) a.receive(WAIT)).getText());
        check(got.equals(Arrays.asList("p0", "p1", "p2", "p3")), "in order, shared: " + got);
        check(a.receiveNoWait() == null && b.receive(200) == null, "all taken");
        c.close();
    }

    /** A JMS requester and a STOMP responder (the test's): the request
     *  carries its temporary queue as reply-to, and the STOMP answer comes
     *  back to it. */
    static void requestReplyStomp(String url) throws Exception {
        Connection c = connect(url, null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TemporaryQueue replyTo = s.createTemporaryQueue();
        MessageConsumer answers = s.createConsumer(replyTo);
        TextMessage request = s.createTextMessage("ping");
        request.setJMSReplyTo(replyTo);
        request.setJMSCorrelationID("stomp-1");
        s.createProducer(s.createQueue("jms.requests.stomp")).send(request);
        TextMessage reply = (TextMessage) answers.receive(WAIT);
        check(reply != null && reply.getText().equals("pong"), "the STOMP reply: " + reply);
        check("stomp-1".equals(reply.getJMSCorrelationID()), "correlated");
        c.close();
    }

    /** A message a transacted consumer rolls back past its redelivery
     *  policy is a dead letter at once (the client's poison ack), with the
     *  client's reason; the one after it is delivered. */
    static void deadLetter(String url) throws Exception {
        ActiveMQConnectionFactory factory = new ActiveMQConnectionFactory(url);
        factory.getRedeliveryPolicy().setMaximumRedeliveries(2);
        factory.getRedeliveryPolicy().setInitialRedeliveryDelay(0);
        Connection c = factory.createConnection();
        c.start();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(s.createQueue("jms.poison"));
        p.send(s.createTextMessage("poison"));
        p.send(s.createTextMessage("fine"));
        Session tx = c.createSession(true, Session.SESSION_TRANSACTED);
        MessageConsumer consumer = tx.createConsumer(tx.createQueue("jms.poison"));
        for (int i = 0; i <= 2; i++) {
            TextMessage m = (TextMessage) consumer.receive(WAIT);
            check(m != null && m.getText().equals("poison"), "delivery " + i + ": " + m);
            tx.rollback();
        }
        TextMessage next = (TextMessage) consumer.receive(WAIT);
        check(next != null && next.getText().equals("fine"), "the next one: " + next);
        tx.commit();
        MessageConsumer dlq = s.createConsumer(s.createQueue("ActiveMQ.DLQ"));
        TextMessage dead = (TextMessage) dlq.receive(WAIT);
        check(dead != null && dead.getText().equals("poison"), "in the DLQ: " + dead);
        String cause = dead.getStringProperty("dlqDeliveryFailureCause");
        check(cause != null && cause.contains("RedeliveryPolicy"), "the client's reason: " + cause);
        nothingMore(consumer);
        c.close();
    }

    public static void main(String[] args) throws Exception {
        String scenario = args[0];
        String url = args[1];
        switch (scenario) {
            case "transactions": transactions(url); break;
            case "client_ack": clientAck(url); break;
            case "selectors": selectors(url); break;
            case "durable": durable(url); break;
            case "types": types(url); break;
            case "request_reply": requestReply(url); break;
            case "pull": pull(url); break;
            case "request_reply_stomp": requestReplyStomp(url); break;
            case "dead_letter": deadLetter(url); break;
            default: throw new IllegalArgumentException("unknown scenario " + scenario);
        }
        System.out.println("ok " + scenario);
    }
}
